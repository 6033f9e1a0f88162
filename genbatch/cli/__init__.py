"""The ``genbatch`` command line and its embedded Airflow mode (``dag.test()`` on SQLite).

``commands`` parses arguments and calls the core; ``worker`` and ``model`` subcommands come from
the ``genbatch.commands`` entry points that other packages (``models``) register, so the core
never imports them. ``embedded`` runs a DAG in-process. May import: all of ``genbatch``.
"""
