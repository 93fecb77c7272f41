// A real model end to end: a linear softmax classifier of scikit-learn's digits (8 x 8 images, ten
// classes) trained with xent::cross_entropy_with_grad, its held-out logits written as .npy for
// xent-eval (run_examples then runs xent-eval --fit-temperature --svg on them).
//
//   example_digits_softmax [DATA_DIR [OUT_DIR]]
//
// DATA_DIR holds examples/data/digits_*.npy (examples/data/gen_digits.py wrote them, with
// scikit-learn's own figures on the same split in digits_sklearn.txt); OUT_DIR receives
// digits_test_logits.npy (float32, [450, 10]) and digits_test_targets.npy (int64, [450]).
//
// The objective is scikit-learn's LogisticRegression(C = 1): the mean cross-entropy plus
// ||W||^2 / (2 C n), the bias unpenalised. It is strongly convex, so full-batch gradient descent
// with Nesterov's momentum reaches the same optimum as scikit-learn's lbfgs; the step is 1 / L for the
// gradient's Lipschitz constant L, bounded from the data by power iteration.

#include "npy.hpp"  // tools/xent-eval's reader and writer

#include <xent/xent.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#ifndef XENT_EXAMPLE_DATA_DIR
#define XENT_EXAMPLE_DATA_DIR "examples/data"
#endif

namespace {

using xent_eval::dtype;

/// A whole .npy file of the given element type: its values (C order) and its shape.
template <class T>
std::vector<T> load(const std::string& path, dtype type, std::vector<std::uint64_t>& shape) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw xent_eval::file_error(path + ": cannot open");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::uint64_t offset = xent_eval::npy_data_offset(path, data, bytes.size(), bytes.size());
  const xent_eval::npy_header h = xent_eval::parse_npy_header(path, data, offset);
  xent_eval::npy_element_type(path, h, {type}, "values");
  xent_eval::npy_check_size(path, h, bytes.size() - offset, sizeof(T));
  shape = h.shape;
  std::vector<T> values((bytes.size() - offset) / sizeof(T));
  std::memcpy(values.data(), bytes.data() + offset, values.size() * sizeof(T));
  return values;
}

/// Features as a 64 x N matrix (one image per column: the memory of the [N, 64] file) and labels.
struct split {
  Eigen::MatrixXd x;
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> y;
};

split load_split(const std::string& dir, const std::string& name) {
  std::vector<std::uint64_t> xs, ys;
  const std::vector<float> x = load<float>(dir + "/digits_" + name + "_x.npy", dtype::float32, xs);
  const std::vector<std::int64_t> y = load<std::int64_t>(dir + "/digits_" + name + "_y.npy", dtype::int64, ys);
  if (xs.size() != 2 || ys.size() != 1 || xs[0] != ys[0]) throw xent_eval::file_error(dir + ": digits_" + name + "_x/_y.npy do not match");
  split s;
  s.x = Eigen::Map<const Eigen::MatrixXf>(x.data(), Eigen::Index(xs[1]), Eigen::Index(xs[0])).cast<double>();
  s.y = Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>>(y.data(), Eigen::Index(ys[0]));
  return s;
}

struct model {
  Eigen::MatrixXd w;  // classes x features
  Eigen::VectorXd b;
  Eigen::MatrixXd logits(const Eigen::MatrixXd& x) const { return (w * x).colwise() + b; }
};

double accuracy(const Eigen::MatrixXd& logits, const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>& y) {
  Eigen::Index right = 0;
  for (Eigen::Index j = 0; j < logits.cols(); ++j) {
    Eigen::Index best = 0;
    logits.col(j).maxCoeff(&best);
    right += best == y(j);
  }
  return double(right) / double(logits.cols());
}

/// The largest eigenvalue of (1/n) [x; 1] [x; 1]^T, by power iteration: the curvature bound of the
/// linear model's inputs (the bias is a feature of constant 1).
double input_curvature(const Eigen::MatrixXd& x) {
  Eigen::MatrixXd xa(x.rows() + 1, x.cols());
  xa << x, Eigen::RowVectorXd::Ones(x.cols());
  const Eigen::MatrixXd gram = xa * xa.transpose() / double(x.cols());
  Eigen::VectorXd v = Eigen::VectorXd::Ones(gram.rows()).normalized();
  double lambda = 0;
  for (int i = 0; i < 200; ++i) {
    const Eigen::VectorXd next = gram * v;
    lambda = next.norm();
    v = next / lambda;
  }
  return lambda;
}

std::map<std::string, double> read_figures(const std::string& path) {
  std::map<std::string, double> out;
  std::ifstream in(path);
  std::string key;
  for (double value = 0; in >> key >> value;) out[key] = value;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string data_dir = argc > 1 ? argv[1] : XENT_EXAMPLE_DATA_DIR;
  const std::string out_dir = argc > 2 ? argv[2] : ".";
  // The products are tiny (10 x 64 x 1347): Eigen's OpenMP team for them costs more than it saves,
  // and on a loaded machine its spinning threads cost a hundred times more.
  Eigen::setNbThreads(1);
  try {
    const split train = load_split(data_dir, "train"), test = load_split(data_dir, "test");
    const Eigen::Index classes = 10, features = train.x.rows();
    const double n = double(train.x.cols());
    const double c = 1.0, l2 = 1.0 / (c * n);  // scikit-learn's penalty ||W||^2 / (2 C), per sample

    // The cross-entropy's Hessian in the logits is diag(p) - p p^T, at most 1/2 in norm: with the
    // inputs' curvature and the penalty, L bounds the whole objective's; mu = l2 from below.
    const double lipschitz = 0.5 * input_curvature(train.x) + l2;
    const double step = 1 / lipschitz, root_kappa = std::sqrt(lipschitz / l2);
    const double momentum = (root_kappa - 1) / (root_kappa + 1);
    std::printf("digits: %lld training and %lld held-out images, %lld pixels, %lld classes\n", (long long)train.x.cols(),
                (long long)test.x.cols(), (long long)features, (long long)classes);
    std::printf("full-batch gradient descent with Nesterov momentum: step 1/L = %.4f, momentum %.4f\n", step, momentum);

    model m{Eigen::MatrixXd::Zero(classes, features), Eigen::VectorXd::Zero(classes)};
    model previous = m;
    Eigen::MatrixXd grad(classes, train.x.cols());
    xent::cross_entropy_options opts;  // mean over the samples, as torch
    const int iterations = 4000;
    for (int it = 0; it <= iterations; ++it) {
      // The gradient at the look-ahead point y = m + momentum (m - previous).
      const model y{m.w + momentum * (m.w - previous.w), m.b + momentum * (m.b - previous.b)};
      const Eigen::MatrixXd logits = y.logits(train.x);
      const double loss = xent::cross_entropy_with_grad(logits, train.y, opts, grad).value();
      if (it % 500 == 0) {
        std::printf("  iteration %4d: training objective %.6f (cross-entropy %.6f), accuracy %.4f\n", it,
                    loss + 0.5 * l2 * y.w.squaredNorm(), loss, accuracy(logits, train.y));
      }
      if (it == iterations) break;
      previous = m;
      m.w = y.w - step * (grad * train.x.transpose() + l2 * y.w);
      m.b = y.b - step * grad.rowwise().sum();
    }

    // The held-out logits as a model would hand them over: float32, [N, C] (C x N column-major).
    const Eigen::MatrixXf test_logits = m.logits(test.x).cast<float>();
    const double test_nll = xent::cross_entropy(test_logits, test.y, opts).value();
    const double test_accuracy = accuracy(test_logits.cast<double>(), test.y);
    const Eigen::MatrixXd train_logits = m.logits(train.x);
    const double objective = xent::cross_entropy(train_logits, train.y, opts).value() + 0.5 * l2 * m.w.squaredNorm();
    std::printf("xent (this example):  training objective %.6f, held-out NLL %.6f nats, accuracy %.4f\n", objective, test_nll,
                test_accuracy);
    const std::map<std::string, double> sklearn = read_figures(data_dir + "/digits_sklearn.txt");
    if (sklearn.count("log_loss") && sklearn.count("accuracy") && sklearn.count("objective"))
      std::printf("scikit-learn (gen_digits.py): training objective %.6f, held-out NLL %.6f nats, accuracy %.4f\n", sklearn.at("objective"),
                  sklearn.at("log_loss"), sklearn.at("accuracy"));

    const std::string logits_path = out_dir + "/digits_test_logits.npy", targets_path = out_dir + "/digits_test_targets.npy";
    xent_eval::write_npy(logits_path, "<f4", {std::uint64_t(test.x.cols()), std::uint64_t(classes)}, test_logits.data(),
                         std::size_t(test_logits.size()) * sizeof(float));
    xent_eval::write_npy(targets_path, "<i8", {std::uint64_t(test.y.size())}, test.y.data(), std::size_t(test.y.size()) * sizeof(std::int64_t));
    std::printf("wrote %s and %s\n", logits_path.c_str(), targets_path.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "example_digits_softmax: %s\n", e.what());
    return 1;
  }
}
