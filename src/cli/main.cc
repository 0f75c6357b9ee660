// main.cc - ctoffloadctl's entry point.
#include <iostream>
#include <string>
#include <vector>

#include "cli/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return ctoffload::cli::run(args, std::cout, std::cerr);
}
