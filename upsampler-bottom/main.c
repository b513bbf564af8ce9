// jukebox-upsampler-bottom: level-0 stage of the pipeline (see jb_stage.h, docs/wire.md).
#include "jb_stage.h"

int main(int argc, char **argv) { return jb_stage_prior_main(argc, argv, "upsampler-bottom", 0); }
