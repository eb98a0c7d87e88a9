// Archive: named tensors and texts held in memory, the form in which
// modules and optimizers hand over their state (Module::save, Optimizer::save)
// and take it back. Writing one to a file and reading it back is I/O and
// lives in xgrad_io (xgrad/io/archive_file.hpp), so that the autograd
// library itself touches no file.
#pragma once

#include <map>
#include <string>

#include <xgrad/core/tensor.hpp>

namespace xgrad {

class Archive {
public:
    void put(const std::string& name, const Tensor& tensor);
    void put(const std::string& name, Tensor&& tensor);
    void put_text(const std::string& name, const std::string& text);
    bool contains(const std::string& name) const;
    // Throw std::out_of_range naming the missing entry.
    const Tensor& tensor(const std::string& name) const;
    const std::string& text(const std::string& name) const;
    // A count (a step number, say) kept as the text of a decimal integer
    // >= 0. integer() parses it strictly: "7junk", "", "-1" and values past
    // a long throw std::runtime_error naming the entry and the text.
    void put_integer(const std::string& name, long value);
    long integer(const std::string& name) const;

    const std::map<std::string, Tensor>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& texts() const { return texts_; }

private:
    std::map<std::string, Tensor> tensors_;
    std::map<std::string, std::string> texts_;
};

}  // namespace xgrad
