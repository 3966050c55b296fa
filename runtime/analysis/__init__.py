"""Story-set analysis: sentiment by genre, the top opinion words and LDA topics of a set of stories.

`text`, `counting` and `report` are pure (no third-party imports); `records` reads story sets from
batch outputs and training CSVs; `engines` holds the parts that need the analyze extra (VADER,
scikit-learn, the Snowball stemmer, transformers), each imported only when used; `run` puts them
together; `html` renders a self-contained report.
"""
