package actors

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// transportServerName is the name every node's certificate carries and every
// client verifies: nodes are identified by holding the cluster key, not by
// their (changing) addresses.
const transportServerName = "qlc-node"

// MinClusterKeyLen is the shortest cluster key accepted (128 bits).
const MinClusterKeyLen = 16

// TransportTLS derives mutual-TLS settings for the actor transport from the
// cluster keyring: primary, then any older or newer keys still accepted. Each
// key deterministically yields an Ed25519 certificate authority that every
// process rebuilds on its own; each process makes a fresh leaf certificate
// signed by the primary key's CA at start. Servers require and verify client
// certificates, clients verify servers, both against the CAs of every key in
// the ring — so a process holding no key of the ring can neither connect,
// nor accept a connection, nor read or inject a message, and two processes
// whose rings share a key talk whichever of them is primary (key rotation,
// docs/keys.md).
func TransportTLS(primary []byte, others ...[]byte) (server, client *tls.Config, err error) {
	caKey, ca, err := transportCA(primary)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, k := range others {
		_, c, err := transportCA(k)
		if err != nil {
			return nil, nil, err
		}
		pool.AddCert(c)
	}

	leafPub, leafKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	leafTmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: transportServerName},
		DNSNames:     []string{transportServerName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, leafPub, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("actors: node certificate: %w", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
	server = &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
	}
	client = &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		RootCAs: pool, ServerName: transportServerName,
	}
	return server, client, nil
}

// transportCA rebuilds the certificate authority of one cluster key: its
// private key (HKDF of the cluster key) and its self-signed certificate.
// Each key's CA has its own subject key id, so a leaf names the CA that
// signed it and verification picks it among those of the ring.
func transportCA(clusterKey []byte) (ed25519.PrivateKey, *x509.Certificate, error) {
	if len(clusterKey) < MinClusterKeyLen {
		return nil, nil, fmt.Errorf("actors: cluster key must be at least %d bytes, got %d", MinClusterKeyLen, len(clusterKey))
	}
	seed, err := hkdf.Key(sha256.New, clusterKey, []byte("qlc"), "qlc actor transport CA v1", ed25519.SeedSize)
	if err != nil {
		return nil, nil, fmt.Errorf("actors: derive CA key: %w", err)
	}
	caKey := ed25519.NewKeyFromSeed(seed)
	caPub := caKey.Public().(ed25519.PublicKey)
	ski := sha256.Sum256(caPub)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "QLC cluster CA"},
		NotBefore:             time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
		SubjectKeyId:          ski[:20],
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caPub, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("actors: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, err
	}
	return caKey, ca, nil
}

// errNoKey is returned when the transport is asked to run without a key
// and without the explicit insecure switch.
var errNoKey = errors.New("actors: the actor transport needs a cluster key (RemoteConfig.ClusterKey), or Insecure for local development")
