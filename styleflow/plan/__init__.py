"""The planning layer: how much memory a run needs (`memory`), what this process has (`host`),
and how a run is laid out to fit a budget (`budget`: one pass, or exact tiles and a shorter
L-BFGS history)."""
