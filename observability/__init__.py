"""Shared contracts of the observability platform.

Every stage (generator, Spark job, detector, narrator, DAGs, dashboard) imports
its settings, event schema, topic/table names, transport and DuckDB store from
here, and never from another stage's folder.
"""

__version__ = "0.1.0"
