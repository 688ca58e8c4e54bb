"""What goes on disk and how it is written so that nothing is lost: safe files and swaps, locks (`files`),
the run directory and its layout (`rundir`)."""
