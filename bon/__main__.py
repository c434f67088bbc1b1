from bon.cli.main import main

main()
