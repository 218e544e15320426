# The README's two commands:  make run  (set up + open the app)  and  make test  (set up + test).
.PHONY: run test setup bench screenshots clean

PROJECT ?= resources/presets/nsam_kv_stream.nlproj

setup:
	@tools/setup.sh

run: setup
	.venv/bin/nlstudio $(PROJECT)

test: setup
	QT_QPA_PLATFORM=offscreen .venv/bin/pytest -q -n auto

bench: setup
	.venv/bin/python bench/levels.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache
