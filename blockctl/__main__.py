from blockctl.cli.main import main

main()
