from videojob_cli.main import main

raise SystemExit(main())
