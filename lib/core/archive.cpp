#include <xgrad/core/archive.hpp>

#include <stdexcept>
#include <utility>

namespace xgrad {

void Archive::put(const std::string& name, const Tensor& tensor) { tensors_[name] = tensor; }
void Archive::put(const std::string& name, Tensor&& tensor) { tensors_[name] = std::move(tensor); }
void Archive::put_text(const std::string& name, const std::string& text) { texts_[name] = text; }
bool Archive::contains(const std::string& name) const { return tensors_.count(name) || texts_.count(name); }

const Tensor& Archive::tensor(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw std::out_of_range("xgrad: the archive has no tensor '" + name + "'");
    return it->second;
}

const std::string& Archive::text(const std::string& name) const {
    auto it = texts_.find(name);
    if (it == texts_.end()) throw std::out_of_range("xgrad: the archive has no text '" + name + "'");
    return it->second;
}

}  // namespace xgrad
