from loyalnet.cli import main

main()
