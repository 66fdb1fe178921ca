"""The core is a library: it never imports the UI framework."""
import subprocess
import sys


def test_importing_quant_core_does_not_import_streamlit():
    code = "import sys, quant_core, quant_core.cli.main; assert 'streamlit' not in sys.modules, 'streamlit was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
