from ._cli._main import main

raise SystemExit(main())
