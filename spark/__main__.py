from spark.streaming_job import main

raise SystemExit(main())
