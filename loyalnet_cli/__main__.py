from loyalnet_cli.main import main

main()
