package ca

import (
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
)

// Extension OIDs trustamp reasons about, in CSRs and in issued certificates.
var (
	oidSubjectKeyID      = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidKeyUsage          = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName    = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints  = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidNameConstraints   = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidCRLDistribution   = asn1.ObjectIdentifier{2, 5, 29, 31}
	oidCertPolicies      = asn1.ObjectIdentifier{2, 5, 29, 32}
	oidAuthorityKeyID    = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtKeyUsage       = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidAuthorityInfo     = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1}
	oidAccessOCSP        = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1}
	oidAccessCAIssuers   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 2}
	oidEKUClientAuth     = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
	oidAttrCommonName    = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidStepCAProvisioner = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 37476, 9000, 64, 1}
)

// extName is a readable name for error messages: "basic constraints
// (2.5.29.19)".
func extName(oid asn1.ObjectIdentifier) string {
	names := []struct {
		oid  asn1.ObjectIdentifier
		name string
	}{
		{oidSubjectKeyID, "subject key identifier"}, {oidKeyUsage, "key usage"}, {oidSubjectAltName, "subject alternative name"},
		{oidBasicConstraints, "basic constraints"}, {oidNameConstraints, "name constraints"},
		{oidCRLDistribution, "CRL distribution points"}, {oidCertPolicies, "certificate policies"},
		{oidAuthorityKeyID, "authority key identifier"}, {oidExtKeyUsage, "extended key usage"},
		{oidAuthorityInfo, "authority information access"}, {oidOCSPNoCheck, "OCSP no-check"},
		{oidStepCAProvisioner, "step-ca provisioner"},
	}
	for _, n := range names {
		if n.oid.Equal(oid) {
			return n.name + " (" + oid.String() + ")"
		}
	}
	return oid.String()
}

// generalNameKinds names the GeneralName CHOICE tags (RFC 5280 4.2.1.6).
var generalNameKinds = []string{"otherName", "rfc822Name (email)", "dNSName", "x400Address", "directoryName",
	"ediPartyName", "uniformResourceIdentifier", "iPAddress", "registeredID"}

// Tags of the GeneralName kinds trustamp puts in agent certificates.
const (
	gnDNS = 2
	gnURI = 6
)

// generalName is one entry of a SubjectAltName (or a CDP full name).
type generalName struct {
	tag   int
	value []byte
}

// parseGeneralNames reads a GeneralNames SEQUENCE completely, every kind
// included: Go's parser keeps only DNS, email, IP and URI names and drops
// the rest (otherName, directoryName, registeredID...) silently, so a check
// on its fields alone would miss them.
func parseGeneralNames(der []byte) ([]generalName, error) {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil {
		return nil, fmt.Errorf("general names do not parse: %w", err)
	}
	if len(rest) > 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return nil, errors.New("general names are not one SEQUENCE")
	}
	return parseGeneralNameList(seq.Bytes)
}

// parseGeneralNameList reads the contents of a GeneralNames SEQUENCE.
func parseGeneralNameList(b []byte) ([]generalName, error) {
	var out []generalName
	for len(b) > 0 {
		var v asn1.RawValue
		var err error
		if b, err = asn1.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("general name does not parse: %w", err)
		}
		if v.Class != asn1.ClassContextSpecific || v.Tag < 0 || v.Tag >= len(generalNameKinds) {
			return nil, fmt.Errorf("general name with class %d tag %d is not a GeneralName", v.Class, v.Tag)
		}
		out = append(out, generalName{tag: v.Tag, value: v.Bytes})
	}
	return out, nil
}

// keyUsageBits names the KeyUsage BIT STRING positions (RFC 5280 4.2.1.3).
var keyUsageBits = []string{"digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment",
	"keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}

// parseKeyUsageBits returns the names of the bits set in a KeyUsage value.
func parseKeyUsageBits(der []byte) ([]string, error) {
	var bits asn1.BitString
	rest, err := asn1.Unmarshal(der, &bits)
	if err != nil || len(rest) > 0 {
		return nil, errors.New("key usage does not parse")
	}
	var out []string
	for i := 0; i < bits.BitLength; i++ {
		if bits.At(i) == 0 {
			continue
		}
		if i < len(keyUsageBits) {
			out = append(out, keyUsageBits[i])
		} else {
			out = append(out, fmt.Sprintf("bit %d", i))
		}
	}
	return out, nil
}

// basicConstraints is RFC 5280's BasicConstraints.
type basicConstraints struct {
	IsCA       bool `asn1:"optional"`
	MaxPathLen int  `asn1:"optional,default:-1"`
}

// ekuNames names the extended key usages an attacker would ask for.
var ekuNames = map[string]string{
	"2.5.29.37.0":             "anyExtendedKeyUsage",
	"1.3.6.1.5.5.7.3.1":       "serverAuth",
	"1.3.6.1.5.5.7.3.2":       "clientAuth",
	"1.3.6.1.5.5.7.3.3":       "codeSigning",
	"1.3.6.1.5.5.7.3.4":       "emailProtection",
	"1.3.6.1.5.5.7.3.8":       "timeStamping",
	"1.3.6.1.5.5.7.3.9":       "OCSPSigning",
	"1.3.6.1.4.1.311.20.2.2":  "smartcardLogon",
	"1.3.6.1.4.1.311.10.3.12": "documentSigning",
}

func ekuName(oid asn1.ObjectIdentifier) string {
	if n, ok := ekuNames[oid.String()]; ok {
		return n + " (" + oid.String() + ")"
	}
	return oid.String()
}

// parseEKU reads an ExtKeyUsageSyntax value.
func parseEKU(der []byte) ([]asn1.ObjectIdentifier, error) {
	var oids []asn1.ObjectIdentifier
	rest, err := asn1.Unmarshal(der, &oids)
	if err != nil || len(rest) > 0 {
		return nil, errors.New("extended key usage does not parse")
	}
	return oids, nil
}

// joinNames joins names for a message.
func joinNames(names []string) string { return strings.Join(names, ", ") }
