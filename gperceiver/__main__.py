from gperceiver.cli.main import entry

entry()
