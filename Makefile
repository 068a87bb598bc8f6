.PHONY: demo test test-slow setup
setup:
	scripts/bootstrap.sh
demo:
	scripts/demo.sh
test:
	scripts/test.sh
test-slow:
	scripts/test.sh -m slow
