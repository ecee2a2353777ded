/*
 * main.c - the mlpipe program: everything is in the library, so that the
 * tests link the same code the binary runs.
 */
#include "config.h"

#include <signal.h>

#include "cli/cmd.h"

int main(int argc, char **argv)
{
	/* A closed pipe (mlpipe runs | head) is an error return, not a death. */
	signal(SIGPIPE, SIG_IGN);
	return mlp_cmd_main(argc, argv);
}
