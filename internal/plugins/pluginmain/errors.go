package pluginmain

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Error codes of the CNI specification (and the two the reference library
// adds), named for use in linen's plugins.
const (
	CodeIncompatibleVersion = types.ErrIncompatibleCNIVersion // 1
	CodeUnsupportedField    = types.ErrUnsupportedField       // 2
	CodeUnknownContainer    = types.ErrUnknownContainer       // 3
	CodeInvalidEnv          = types.ErrInvalidEnvironmentVariables
	CodeIOFailure           = types.ErrIOFailure       // 5
	CodeDecoding            = types.ErrDecodingFailure // 6
	CodeInvalidConfig       = types.ErrInvalidNetworkConfig
	CodeInvalidNetNS        = types.ErrInvalidNetNS // 8
	CodeTryAgainLater       = types.ErrTryAgainLater
	CodeNotAvailable        = 50                // STATUS: cannot service ADD
	CodeLimitedConnectivity = 51                // STATUS: and existing pods may be affected
	CodeInternal            = types.ErrInternal // 999
)

// Errorf returns a CNI error with the given code.
func Errorf(code uint, format string, args ...any) *types.Error {
	return &types.Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// FieldErrors collects configuration problems, each with the path of the
// field it concerns, so that validation reports every problem at once.
type FieldErrors struct {
	code uint
	list []string
}

// NewFieldErrors starts an empty collection for errors of the given code
// (usually CodeInvalidConfig).
func NewFieldErrors(code uint) *FieldErrors { return &FieldErrors{code: code} }

// Add records a problem with field ("ipam.ranges[0][1].subnet").
func (f *FieldErrors) Add(field, format string, args ...any) {
	f.list = append(f.list, field+": "+fmt.Sprintf(format, args...))
}

// Len is the number of problems recorded.
func (f *FieldErrors) Len() int { return len(f.list) }

// Err returns nil when nothing was recorded, else one CNI error that lists
// every problem.
func (f *FieldErrors) Err() error {
	if len(f.list) == 0 {
		return nil
	}
	return &types.Error{Code: f.code, Msg: strings.Join(f.list, "; ")}
}

// ToCNI converts any error into a CNI error: CNI errors pass through (also
// when wrapped, keeping the outer context in the message); anything else
// becomes code 999 with its message.
func ToCNI(err error) *types.Error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		if te.Error() == err.Error() {
			return te
		}
		return &types.Error{Code: te.Code, Msg: err.Error(), Details: te.Details}
	}
	return &types.Error{Code: CodeInternal, Msg: err.Error()}
}

// Decode unmarshals a JSON document into v, turning decoder errors into CNI
// errors that name the offending field (code 6).
func Decode(data []byte, v any, what string) error {
	if err := json.Unmarshal(data, v); err != nil {
		return DecodeError(err, what)
	}
	return nil
}

// DecodeError describes a json decoding error with the field it concerns.
func DecodeError(err error, what string) *types.Error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = what
		}
		return Errorf(CodeDecoding, "%s: cannot use JSON %s as %s", field, te.Value, te.Type)
	case errors.As(err, &se):
		return Errorf(CodeDecoding, "%s: not valid JSON: %v (at byte %d)", what, se, se.Offset)
	default:
		return Errorf(CodeDecoding, "%s: %v", what, err)
	}
}
