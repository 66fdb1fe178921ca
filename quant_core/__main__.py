import sys

from quant_core.cli.main import main

sys.exit(main())
