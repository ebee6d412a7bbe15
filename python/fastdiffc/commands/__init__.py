"""One module per `fastdiffc` subcommand; see fastdiffc/cli.py."""
