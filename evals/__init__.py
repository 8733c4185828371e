"""`parley eval`: how well the agent answers from a knowledge base.

A base is a knowledge folder and a question file (evals/data/*/ hold the built-in ones). Each run
measures retrieval (is the fact among the passages found), typed answers and, with `--spoken`,
spoken answers over a real server, and writes a report that compares itself with the last one.

- `evals.questions`: the question file format, its validation, and how questions form conversations
- `evals.scoring`: whether an answer is right, whether the agent declined, word error rate
- `evals.runner`: retrieval, the server, the conversations over /ws, the `parley eval` command
- `evals.report`: the figures, report.json and report.md, and the change since the previous run
"""
