from api_server.app import main

main()
