from videojob.cli.main import main

raise SystemExit(main())
