"""`clipcov compare`: select -> export -> pretrain -> eval for each method variant, budget and seed,
then a paired comparison (differences against baselines over the same seeds, with 95% intervals).

Roles: ``config.py`` (variants, budgets, seeds, training length), ``stages.py`` (one resumable
function per stage), ``stats.py`` (pure interval functions), ``report.py`` (table, results.json,
report.html), ``runner.py`` (the loop). `clipcov demo` feeds its built-in corpus to this code.
"""
