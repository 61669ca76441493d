# The two commands (see README.md). Everything else lives in scripts/.
.PHONY: dev test build
dev:
	@scripts/dev.sh
test:
	@scripts/test.sh
build:
	@scripts/bootstrap.sh && scripts/build.sh all
