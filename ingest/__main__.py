from ingest.service import main

raise SystemExit(main())
