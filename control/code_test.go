package control

import "testing"

// Only the server's passing trouble is transient; refusals that need a person are not.
func TestCodeTransient(t *testing.T) {
	for _, c := range []Code{CodeRateLimited, CodeStorageFull, CodeInternal} {
		if !c.Transient() {
			t.Errorf("%s is not transient", c)
		}
	}
	for _, c := range []Code{"", CodeAuthKey, CodeBanned, CodeBlocked, CodeInvalid, CodeNameTaken, CodeLocked, CodeVersion, "some_future_code"} {
		if c.Transient() {
			t.Errorf("%q is transient", c)
		}
	}
	if !validCode(CodeStorageFull) {
		t.Error("storage_full does not pass validCode")
	}
}
