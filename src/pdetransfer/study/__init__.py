"""Study: the config as a set of runs, aggregation into tables, plots and publishing."""
