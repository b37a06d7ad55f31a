"""One module per outside service, each implementing a port from bot.ports."""
