"""kpibot's library: storage, import, KPI computation, statistics and charts. Knows no Slack."""
__version__ = "0.1.0"
