"""One module per topic: ``Config``, ``PRESETS`` (smoke, quick, full), ``HEADLINE``, ``PEER`` and
``run(config) -> Result``. See ``deepnotes.core.experiment`` for the contract; modules here are
discovered by ``deepnotes.core.registry``, never listed by hand.
"""
