from caxton.cli import main

raise SystemExit(main())
