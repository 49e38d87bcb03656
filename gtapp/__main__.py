from gtapp.cli import main

raise SystemExit(main())
