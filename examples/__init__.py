"""Example configuration, scripts and the demo (examples.demo); not part of the installed bot."""
