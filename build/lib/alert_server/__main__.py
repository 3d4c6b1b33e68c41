from alert_server.app import main

main()
