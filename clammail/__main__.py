from clammail.cli import main

raise SystemExit(main())
