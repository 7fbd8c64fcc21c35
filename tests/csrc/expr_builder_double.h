// A test double of TensorRT's dimension-expression builder, for unit-testing
// getOutputShapes without libnvinfer. IExprBuilder and IDimensionExpr are thin
// wrappers that forward to apiv::VExprBuilder / apiv::VDimensionExpr through their
// protected mImpl pointer; this header supplies both implementations. Expressions fold
// constants like TensorRT does and carry a readable text ("(T*C)") so a test can check
// which expression a plugin built, not only its value.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace m2ae_test
{

class ExprValue final : public nvinfer1::apiv::VDimensionExpr
{
public:
    ExprValue(bool constant, int64_t value, std::string text)
        : mConstant(constant)
        , mValue(value)
        , mText(std::move(text))
    {
    }

    bool isConstant() const noexcept override
    {
        return mConstant;
    }

    int64_t getConstantValue() const noexcept override
    {
        return mConstant ? mValue : std::numeric_limits<int64_t>::min();
    }

    bool isSizeTensor() const noexcept override
    {
        return false;
    }

    std::string const& text() const noexcept
    {
        return mText;
    }

private:
    bool mConstant;
    int64_t mValue;
    std::string mText;
};

//! The public face of one expression: TensorRT's IDimensionExpr pointed at an ExprValue.
class Expr final : public nvinfer1::IDimensionExpr
{
public:
    explicit Expr(ExprValue* value) noexcept
    {
        mImpl = value;
    }

    ~Expr() noexcept override = default;
};

class ExprStore final : public nvinfer1::apiv::VExprBuilder
{
public:
    nvinfer1::IDimensionExpr const* constant(int64_t value) noexcept override
    {
        return make(true, value, std::to_string(value));
    }

    nvinfer1::IDimensionExpr const* operation(nvinfer1::DimensionOperation op, nvinfer1::IDimensionExpr const& first,
        nvinfer1::IDimensionExpr const& second) noexcept override
    {
        std::string const a = text(first);
        std::string const b = text(second);
        operations.push_back(symbol(op) + "(" + a + "," + b + ")");
        if (first.isConstant() && second.isConstant())
        {
            int64_t value = 0;
            if (fold(op, first.getConstantValue(), second.getConstantValue(), value))
            {
                return constant(value);
            }
            return nullptr;
        }
        return make(false, 0, "(" + a + infix(op) + b + ")");
    }

    nvinfer1::IDimensionExpr const* declareSizeTensor(
        int32_t /*outputIndex*/, nvinfer1::IDimensionExpr const& /*opt*/, nvinfer1::IDimensionExpr const& /*upper*/) noexcept override
    {
        // Neither m2ae op has a size-tensor output; a call is recorded so a test sees it.
        operations.push_back("declareSizeTensor");
        return nullptr;
    }

    nvinfer1::IDimensionExpr const* symbolic(std::string const& name)
    {
        return make(false, 0, name);
    }

    //! The text of an expression made here; "?" for one that was not.
    std::string text(nvinfer1::IDimensionExpr const& expr) const
    {
        auto const found = mValues.find(&expr);
        return found == mValues.end() ? "?" : found->second->text();
    }

    std::vector<std::string> operations;

private:
    static std::string symbol(nvinfer1::DimensionOperation op)
    {
        using Op = nvinfer1::DimensionOperation;
        switch (op)
        {
        case Op::kSUM: return "SUM";
        case Op::kPROD: return "PROD";
        case Op::kMAX: return "MAX";
        case Op::kMIN: return "MIN";
        case Op::kSUB: return "SUB";
        case Op::kEQUAL: return "EQUAL";
        case Op::kLESS: return "LESS";
        case Op::kFLOOR_DIV: return "FLOOR_DIV";
        case Op::kCEIL_DIV: return "CEIL_DIV";
        }
        return "UNKNOWN";
    }

    static std::string infix(nvinfer1::DimensionOperation op)
    {
        return op == nvinfer1::DimensionOperation::kPROD ? "*"
            : op == nvinfer1::DimensionOperation::kSUM   ? "+"
            : op == nvinfer1::DimensionOperation::kSUB   ? "-"
                                                         : " " + symbol(op) + " ";
    }

    static bool fold(nvinfer1::DimensionOperation op, int64_t a, int64_t b, int64_t& out)
    {
        using Op = nvinfer1::DimensionOperation;
        switch (op)
        {
        case Op::kSUM: out = a + b; return true;
        case Op::kPROD: out = a * b; return true;
        case Op::kMAX: out = a > b ? a : b; return true;
        case Op::kMIN: out = a < b ? a : b; return true;
        case Op::kSUB: out = a - b; return true;
        case Op::kEQUAL: out = a == b ? 1 : 0; return true;
        case Op::kLESS: out = a < b ? 1 : 0; return true;
        case Op::kFLOOR_DIV:
            if (b == 0)
            {
                return false;
            }
            out = a / b - ((a % b != 0 && (a < 0) != (b < 0)) ? 1 : 0);
            return true;
        case Op::kCEIL_DIV:
            if (b == 0)
            {
                return false;
            }
            out = a / b + ((a % b != 0 && (a < 0) == (b < 0)) ? 1 : 0);
            return true;
        }
        return false;
    }

    nvinfer1::IDimensionExpr const* make(bool isConstant, int64_t value, std::string text)
    {
        mStorage.emplace_back(isConstant, value, std::move(text));
        mExprs.emplace_back(&mStorage.back());
        mValues[&mExprs.back()] = &mStorage.back();
        return &mExprs.back();
    }

    // Deques keep every element where it was made, so handed-out pointers stay valid.
    std::deque<ExprValue> mStorage;
    std::deque<Expr> mExprs;
    std::map<nvinfer1::IDimensionExpr const*, ExprValue const*> mValues;
};

//! What a plugin's getOutputShapes receives: TensorRT's IExprBuilder over an ExprStore.
class ExprBuilder final : public nvinfer1::IExprBuilder
{
public:
    ExprBuilder() noexcept
    {
        mImpl = &store;
    }

    ~ExprBuilder() noexcept override = default;

    ExprStore store;
};

} // namespace m2ae_test
