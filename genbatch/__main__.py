from genbatch.cli import main

raise SystemExit(main())
