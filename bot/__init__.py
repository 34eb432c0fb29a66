"""The front doors: the command line now, Slack and the scheduler later. Keep these thin;
the work happens in :mod:`metrics`."""
