#include "app.hpp"

int main(int argc, char** argv) { return gan::run_app(argc, argv); }
