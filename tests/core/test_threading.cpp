// bound_openmp_spin_wait (core/threading.h): with neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT set,
// the program is executed again with GOMP_SPINCOUNT=10000 and the same arguments; an explicit
// setting is kept. The child is this test binary running the disabled helper test below.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

#include "core/threading.h"

namespace kvroute {
namespace {

// Run only as a child of the test below: re-executes itself (through /proc/self/cmdline's
// arguments) and prints what it then sees.
TEST(Threading, DISABLED_SpinWaitHelper) {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t begin = 0; begin < all.size();) {
    const size_t end = all.find('\0', begin);
    args.push_back(all.substr(begin, end - begin));
    begin = end + 1;
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // How many times this program image started (kept in the environment, which exec keeps).
  const char* before = std::getenv("KVROUTE_TEST_STARTS");
  const int starts = (before ? std::atoi(before) : 0) + 1;
  setenv("KVROUTE_TEST_STARTS", std::to_string(starts).c_str(), 1);
  bound_openmp_spin_wait(argv.data());
  const char* count = std::getenv("GOMP_SPINCOUNT");
  std::printf("\nhelper: GOMP_SPINCOUNT=%s args=%zu starts=%d\n", count ? count : "(unset)", args.size(), starts);
}

std::string run_helper(const std::string& env) {
  const std::string cmd = "env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY -u KVROUTE_TEST_STARTS " + env +
                          " /proc/" + std::to_string(getpid()) +
                          "/exe --gtest_also_run_disabled_tests --gtest_filter=Threading.DISABLED_SpinWaitHelper 2>&1";
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    EXPECT_EQ(pclose(p), 0) << out;
  }
  return out;
}

TEST(Threading, UnsetSpinWaitIsBoundedByExecutingAgain) {
  const std::string out = run_helper("");
  // Started twice (the second time with the spin count), printed once: the first image never returned.
  EXPECT_NE(out.find("helper: GOMP_SPINCOUNT=10000 args=3 starts=2"), std::string::npos) << out;
  EXPECT_EQ(out.find("helper:"), out.rfind("helper:")) << out;
}

TEST(Threading, AnExplicitOpenMpSettingIsKept) {
  std::string out = run_helper("OMP_WAIT_POLICY=ACTIVE");
  EXPECT_NE(out.find("helper: GOMP_SPINCOUNT=(unset) args=3 starts=1"), std::string::npos) << out;
  out = run_helper("GOMP_SPINCOUNT=5");
  EXPECT_NE(out.find("helper: GOMP_SPINCOUNT=5 args=3 starts=1"), std::string::npos) << out;
}

}  // namespace
}  // namespace kvroute
