#include <xgrad/distributed.hpp>

#include "app.hpp"

// Started by mpirun or srun, the processes train one GAN together (README,
// "Several processes or machines"); started plainly, MPI is not started.
int main(int argc, char** argv) {
    if (!xgrad::Distributed::launched()) return gan::run_app(argc, argv);
    return xgrad::Distributed::run(argc, argv,
                                   [&](xgrad::Distributed& distributed) { return gan::run_app(argc, argv, &distributed); });
}
