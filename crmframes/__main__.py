from crmframes.cli import main

raise SystemExit(main())
