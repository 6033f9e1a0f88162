from genbatch.cli.commands import main

raise SystemExit(main())
