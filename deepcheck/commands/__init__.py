"""The sub-commands of ``python -m deepcheck`` (:mod:`deepcheck.cli`): one module per command, each with
``configure_parser(name, parser)`` and ``main(name, args)``. These modules import only the standard library and
:mod:`deepcheck.commandline` at the top; torch and the modules that do the work are imported inside ``main``.

* :mod:`.train` -- ``train`` (:func:`deepcheck.train.train`);
* :mod:`.evaluate` -- ``attack`` and ``evaluate`` (:func:`deepcheck.evaluate.evaluate_model`);
* :mod:`.reproduce` -- ``reproduce`` (:func:`deepcheck.reproduce.run`);
* :mod:`.common` -- what the commands share: dataset names, the device check.
"""
