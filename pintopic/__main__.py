from pintopic.cli import main

raise SystemExit(main())
