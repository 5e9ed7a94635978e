"""The standard tabular preprocessing of a schema, fitted on one client's own rows.

:class:`TabularPreprocessor` is the :func:`~sheaf.data.pipeline.standard_pipeline` of a
:class:`~sheaf.data.schema.TabularSchema` — median imputation and standard scaling of the
numeric columns, one-hot encoding of the categorical ones in their declared order (a
missing or unknown category is all zeros) — with the interface a data owner needs to
preprocess its own rows: ``fit`` on its training rows, ``transform`` any of its rows.
Because the categories are declared, every client produces the same feature columns.

For preprocessing fitted on the whole federation's statistics instead, see
:func:`~sheaf.data.pipeline.fit_federated` and ``data.preprocessing = "federated"``.

Example:
    >>> import pandas as pd
    >>> schema = TabularSchema(numeric=("age",), categorical={"sex": ("F", "M")})
    >>> frame = pd.DataFrame({"age": [30.0, None, 50.0], "sex": ["M", "F", None]})
    >>> fitted = TabularPreprocessor(schema).fit(frame)
    >>> fitted.transform(frame).astype(float).round(3).tolist()
    [[-1.225, 0.0, 1.0], [0.0, 1.0, 0.0], [1.225, 0.0, 0.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from sheaf.data.pipeline import FittedPipeline, Pipeline, standard_pipeline
from sheaf.data.schema import TabularSchema

__all__ = ["FittedTabular", "TabularPreprocessor"]

#: The fitted standard preprocessing (the name it had before pipelines existed).
FittedTabular = FittedPipeline


@dataclass(frozen=True)
class TabularPreprocessor:
    """Fits the standard pipeline of ``schema`` on one client's rows.

    Attributes:
        schema: the declared columns; categorical ones must declare their categories.
    """

    schema: TabularSchema

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline it fits."""
        return standard_pipeline(self.schema)

    def fit(self, frame: pd.DataFrame) -> FittedPipeline:
        """Fit on one client's own rows.

        Raises:
            SchemaError: if the rows break the schema.
        """
        return self.pipeline.fit(frame)
