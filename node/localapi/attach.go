//go:build unix

package localapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// Attachment is an open POST /v1/attach exchange; Close ends the attachment.
type Attachment struct {
	Info AttachInfo
	conn *net.UnixConn
	r    *bufio.Reader
}

// Attach starts attaching a device: it returns the node's addresses, for configuring the device
// before Send hands it over.
func (c *Client) Attach(ctx context.Context) (*Attachment, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, ErrNotRunning
	}
	conn := nc.(*net.UnixConn)
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://local.warren/v1/attach", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", AttachProtocol)
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("local API: %w", err)
	}
	// The node sends nothing after the info line until it has the descriptor, so the buffered
	// reader cannot swallow anything the descriptor rides on (it goes the other way anyway).
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, req)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("local API: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		var e ErrorReply
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return nil, &Error{Code: e.Code, Message: e.Error}
		}
		return nil, fmt.Errorf("local API: %s", resp.Status)
	}
	a := &Attachment{conn: conn, r: r}
	if err := readLine(r, &a.Info); err != nil {
		conn.Close()
		return nil, err
	}
	return a, nil
}

// Send hands the device's descriptor to the node and waits for its answer. The caller may close f
// afterwards: the node has its own copy.
func (a *Attachment) Send(f *os.File) (*AttachResult, error) {
	a.conn.SetDeadline(time.Now().Add(15 * time.Second))
	defer a.conn.SetDeadline(time.Time{})
	if _, _, err := a.conn.WriteMsgUnix([]byte{0}, syscall.UnixRights(int(f.Fd())), nil); err != nil {
		return nil, fmt.Errorf("local API: send the device: %w", err)
	}
	var res AttachResult
	if err := readLine(a.r, &res); err != nil {
		return nil, err
	}
	if res.Error != "" {
		return nil, errors.New(res.Error)
	}
	return &res, nil
}

// Close ends the attachment: the node lets go of the device.
func (a *Attachment) Close() error { return a.conn.Close() }

func readLine(r *bufio.Reader, v any) error {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("local API: the node closed the attachment: %w", err)
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("local API: %w", err)
	}
	return nil
}
